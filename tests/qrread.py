"""Reading QR codes back in tests with a real QR reader (ZXing's C++ port),
from a matrix of modules (True: dark) however it was drawn."""

from __future__ import annotations

import pytest


def read_qr(matrix: list[list[bool]]) -> list[str]:
    """The texts of the QR codes in ``matrix`` (a quiet zone included)."""
    np = pytest.importorskip("numpy")
    zxingcpp = pytest.importorskip("zxingcpp")
    pixels = np.kron(np.array([[0 if dark else 255 for dark in row] for row in matrix], dtype=np.uint8), np.ones((6, 6), dtype=np.uint8))
    return [code.text for code in zxingcpp.read_barcodes(pixels)]
