"""Tools for the demo and the tests: an Artifactory-compatible front, image seeding, process helpers."""
