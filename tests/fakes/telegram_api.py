"""The Telegram Bot API stand-in the tests use: the product's own (bot/standin.py), which
the demo runs too, under the tests' names."""

from __future__ import annotations

from bot.standin import BOT_ID, DemoChats, Sent
from bot.standin import BotApiStandIn as FakeTelegram
from bot.standin import StandInUser as FakeUser

__all__ = ["BOT_ID", "DemoChats", "FakeTelegram", "FakeUser", "Sent"]
