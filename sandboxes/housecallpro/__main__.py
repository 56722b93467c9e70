"""`python -m sandboxes.housecallpro --port 8101 [--office/--no-office --office-pace S --seed N]`."""

from __future__ import annotations

import argparse

from .app import serve
from .config import RETRY_AFTER_MODES, HcpConfig, OfficeConfig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandboxes.housecallpro", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8101)
    parser.add_argument(
        "--office",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="run the back office (converts leads, schedules and completes jobs, invoices)",
    )
    parser.add_argument("--office-pace", type=float, default=1.0, help="seconds between office steps")
    parser.add_argument("--seed", type=int, default=0, help="seeds ids, the office's fates and throttling")
    parser.add_argument("--rate", type=float, default=None, help="requests per second per company")
    parser.add_argument("--burst", type=int, default=None)
    parser.add_argument(
        "--retry-after", choices=RETRY_AFTER_MODES, default=None, help="whether a throttled answer carries Retry-After"
    )
    parser.add_argument("--no-demo", action="store_true", help="do not seed the demo accounts")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    if args.office_pace <= 0:
        parser.error("--office-pace must be > 0")
    config = HcpConfig(
        seed=args.seed,
        seed_demo_accounts=not args.no_demo,
        office=OfficeConfig(enabled=args.office, pace_s=args.office_pace, seed=args.seed),
    )
    if args.rate is not None:
        config.rate = args.rate
    if args.burst is not None:
        config.burst = args.burst
    if args.retry_after is not None:
        config.retry_after = args.retry_after
    serve(args.host, args.port, config, log_level=args.log_level.lower())


if __name__ == "__main__":
    main()
