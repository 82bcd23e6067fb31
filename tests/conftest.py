"""Make this checkout importable as ansible_collections.strata.ops for every test."""

import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(REPO_ROOT, ".collections")
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)
# Shared test helpers (tests/unit/fakes) import as tests.unit.fakes.
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
