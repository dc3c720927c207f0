"""Harness mode: a suite of Harbor tasks whose mean reward is the metric."""
