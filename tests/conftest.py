# SPDX-License-Identifier: Apache-2.0
"""Shared pytest fixtures: the local attestation stack (tests/stack).

stack_dir      session: a state dir with the stack PKI and secrets (pki.init_state, once)
session_stack  session: a LocalStack on its own copy of stack_dir with ITA started
local_stack    function: a LocalStack on a fresh copy of stack_dir with ITA started;
               everything it started is stopped at teardown

Copies share keys and certificates with stack_dir (no key generation per test) but have their
own announce files, request logs and re-issued ITA certificates, so stacks never interfere.
"""

import pytest

from tests.stack import pki
from tests.stack.fixtures import copy_state


@pytest.fixture(scope="session")
def stack_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("stack-pki")
    pki.init_state(str(path))
    return path


@pytest.fixture(scope="session")
def session_stack(stack_dir, tmp_path_factory):
    stack = copy_state(stack_dir, tmp_path_factory.mktemp("session-stack") / "state")
    stack.start_ita()
    yield stack
    stack.stop_all()


@pytest.fixture
def local_stack(stack_dir, tmp_path):
    stack = copy_state(stack_dir, tmp_path / "state")
    stack.start_ita()
    yield stack
    stack.stop_all()
