"""`python -m hinet_deploy.cli ...` is `hinet-deploy ...`."""
import sys

from hinet_deploy.cli import main

sys.exit(main())
