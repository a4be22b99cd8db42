"""``python -m nbllm``."""

from __future__ import annotations

from nbllm.cli import main

if __name__ == "__main__":
    main()
