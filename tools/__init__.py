"""The toolkit's shared machinery: one module per concept (running Caffe, logs, plots, data, downloads)."""
