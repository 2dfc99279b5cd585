"""A local Slack and Teams emulator for `agentdesk dev`.

The page at `/` looks like a chat workspace. Its backend talks to the bot only through the production
endpoints and wire formats: signed Slack Events API requests to `/slack/events` (the bot's Slack Web API
base URL points back at the emulator's Web API under `/_emulator/slack/api/`) and Bot Framework
activities to `/api/messages` (their `serviceUrl` is the emulator's connector under `/_emulator/teams/`).
What works here therefore works against real Slack and Teams.
"""
