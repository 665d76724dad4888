"""What the suite's tests share, one module per concern; tests/conftest.py loads them."""
