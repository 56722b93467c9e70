"""Referrals: intake of a job, matching it to receiving companies, and the directory of companies."""
