from orchestrator.cli import main
from orchestrator.errors import EXIT_INTERRUPTED

try:
    code = main()
except KeyboardInterrupt:  # a second Ctrl-C while the first one's clean-up ran: still no traceback
    code = EXIT_INTERRUPTED
raise SystemExit(code)
