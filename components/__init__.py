"""KFP components (one module per stage) and the cluster side: images, the MPIJob renderer, the launcher.

Keep this file import-free: `components.launcher`, `components.mpijob` and `components.images` run in
images without kfp (the CronJob's launcher image, the Makefile), so importing kfp here would break them.
"""
