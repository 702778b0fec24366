"""What the fork server imports before it forks consumers (roles/process/forkserver.py):
the consumer's modules, and botocore's SQS model parsed, so that a forked consumer finds
them ready. Nothing here starts a thread or opens a connection: it happens before a fork.
"""

from __future__ import annotations

import gc
import warnings

from orchestrator.backends.sqs import sessions
from orchestrator.roles.consumer import consumer  # noqa: F401  (imported to be shared)
from orchestrator.roles.process import processes

processes.name_process("orc-forkserver")  # what ps -o comm and top show for it
sessions.warm_models()
# A forked process runs its worker's main module (child.py, here already imported) again
# as __mp_main__, as multiprocessing does for every child; runpy warns about that on
# stderr, a line that is not a log event. It is expected here, and harmless: child.py
# only defines functions.
warnings.filterwarnings("ignore", category=RuntimeWarning, module="runpy",
                        message=".*found in sys.modules after import of package")
# Out of the collector's sight: a consumer's collections would otherwise walk (and so
# write to, and copy) every page of these objects it shares with the fork server.
gc.collect()
gc.freeze()
