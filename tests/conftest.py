"""Shared pytest set-up: markers that pyproject.toml does not list yet."""


def pytest_configure(config):
    """Register the ``ray`` marker so ``-m "not ray"`` can leave the Ray tests out."""
    config.addinivalue_line(
        "markers", "ray: starts a local Ray cluster (slower; deselect with -m 'not ray')"
    )
