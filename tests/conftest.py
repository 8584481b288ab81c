"""Fixtures shared by the test modules."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """One intra-op thread: small runs are faster that way, and far less sensitive to other
    processes sharing the CPU (OpenMP threads spin when oversubscribed). A module takes it for
    all its tests with pytestmark = pytest.mark.usefixtures("one_thread")."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)
