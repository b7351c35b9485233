"""Fixtures shared by the integration modules that run the whole agent on real parts."""

from tests.integration.agent_world import agent_world  # noqa: F401 - a fixture
