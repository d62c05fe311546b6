"""The ground every stage stands on: the error type, atomic files, optional imports, size limits.

Imports nothing else of the project.
"""
