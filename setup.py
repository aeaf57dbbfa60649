"""Kept for the twistd plugin cache refresh after installation."""

from setuptools import setup

setup()
