"""PagerDuty Events API v2 compatible source."""
