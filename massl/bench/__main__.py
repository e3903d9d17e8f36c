"""`python -m massl.bench worker ...`: the worker without WORKER_BOOT, so the allocator is
applied only after the package has imported torch (WORKER_BOOT is what `massl bench` runs)."""

import sys

from massl import allocator
from massl.bench import _worker_main

allocator.apply()
sys.exit(_worker_main())
