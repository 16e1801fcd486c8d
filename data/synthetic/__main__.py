"""`python -m data.synthetic`: write a synthetic Cityscapes set (see data/synthetic/cli.py)."""

from data.synthetic.cli import main

if __name__ == "__main__":
    main()
