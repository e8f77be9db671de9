"""`python -m lorascope.train ...`: the entry point the training rules launch."""

from lorascope.train.trainer import main

if __name__ == "__main__":
    main()
