"""What every provider sandbox shares: signed webhook delivery (`webhooks`)."""
