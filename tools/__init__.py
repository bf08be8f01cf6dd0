"""The toolkit's shared machinery: one module per concept (running Caffe, logs, plots, data, downloads)."""

import os

# pycaffe logs every layer it sets up at INFO level; keep warnings and errors only, unless the user
# asks for more. glog reads this once, when pycaffe loads, so it is set before anything imports caffe
# (each q-package imports `tools` first). The `caffe` binary's runner sets its own level.
os.environ.setdefault("GLOG_minloglevel", "2")
