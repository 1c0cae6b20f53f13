"""``python -m mlops <verb>``, as ``dvc.yaml`` calls it."""

import sys

from mlops.cli import main

sys.exit(main())
