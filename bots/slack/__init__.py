"""Slack adapter: Events API / Socket Mode in, SlackReplier out."""
