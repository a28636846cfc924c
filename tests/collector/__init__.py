"""The collector's tests: a package, so its module names (conftest, test_cli) are its own."""
