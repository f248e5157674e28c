"""``python -m iaakd``: the ``iaakd`` command (``python -m iaakd score MODEL PATH...``)."""

from iaakd.cli import main

if __name__ == "__main__":
    main()
