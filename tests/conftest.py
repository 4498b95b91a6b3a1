"""Shared test set-up: quiet the TFLite/absl loggers for every test process."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("GLOG_minloglevel", "3")
