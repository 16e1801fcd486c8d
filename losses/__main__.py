"""python -m losses --list: the registered methods with their kind and options (method.name, method.<name>.*)."""

import argparse

from losses import method_lines

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--list", action="store_true", help="print the methods (the default)")
parser.parse_args()
print("\n".join(method_lines()))
