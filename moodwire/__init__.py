"""moodwire: a streaming sentiment monitor for financial opinion."""

__version__ = "0.1.0"
