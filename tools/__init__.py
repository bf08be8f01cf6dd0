"""The toolkit's shared machinery: one module per concept (running Caffe, logs, plots, data, downloads,
AlexNet, command-line errors). Importing it does nothing else: entry points (demo.py, each module's
`main`) quiet pycaffe's set-up log themselves, before caffe loads (GLOG_minloglevel)."""
