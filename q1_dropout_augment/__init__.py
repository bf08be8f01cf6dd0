"""Q1: dropout and data augmentation on a small two-layer ConvNet (CIFAR-10 or Fashion-MNIST)."""
