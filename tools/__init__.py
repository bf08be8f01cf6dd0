"""The toolkit's shared machinery: one module per concept. Importing it does nothing else: entry points
(demo.py, each module's `main`) quiet pycaffe's set-up log themselves, before caffe loads (GLOG_minloglevel).

The modules by concern (the folder stays flat so that every `python -m tools.X` in the README, the notebooks
and users' shell history keeps working; this index is the map):

  running Caffe   caffe_runner (train/test/time: process, progress, signals), caffe_log (the log Caffe
                  writes and the runner follows), snapshots (find, check by content, move aside), preflight
                  (inputs and weights before Caffe starts), solver (solver prototxts), device (CPU/GPU choice),
                  paths (where Caffe and the data are), locks (one run per folder)
  nets, weights   alexnet (AlexNet as NetSpec), weights (read, fit and load .caffemodel files), transform
                  (pycaffe's image preprocessing), draw_net (caffe.draw)
  logs, figures   parse_log (Caffe logs to tables), plot_log (curves), progress (bars and plain progress lines),
                  runinfo (the machine a measurement ran on)
  data            datasets (Fashion-MNIST, CIFAR-10), lmdb_io (LMDBs and mean files)
  downloads       download (one large file: resume, retries, checksums), polite_fetch (many files from other
                  people's servers: per-host limits, Retry-After), download_model (BVLC model zoo weights),
                  get_ilsvrc_aux (ImageNet mean and labels)
  ground floor    errors (ToolkitError, the base of every expected failure), cli (one way out of every
                  command, shared argument types), fileio (atomic writes, checked reads, moving aside)
  the project     doctor (what is installed), install_report and readme_sections (README's generated
                  sections), import_cycles (make lint); setup/, wheel/, portability/ (shell: building Caffe,
                  the wheel, clean-root checks)
"""
