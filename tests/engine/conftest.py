"""The sample corpus's pages and questions, and the test server, as the synth server tests
define them (the Ray tests drive the same teacher)."""

from tests.synth.test_synth_server import pages, questions, server  # noqa: F401
