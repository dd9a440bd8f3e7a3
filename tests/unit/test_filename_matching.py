"""Every module has its test file beside its folder: registry_mirror/<folder>/<module>.py is tested in
tests/unit/<folder>/test_<module>.py (after mitmproxy's test/filename_matching.py). The modules below have none
yet: a module added without one fails here; one that gets its file leaves the list."""
from pathlib import Path

import registry_mirror

PACKAGE = Path(registry_mirror.__file__).parent
UNIT = Path(__file__).parent
NO_TEST_FILE_YET: set[str] = set()


def expected_tests() -> dict[str, Path]:
    """Each module (relative to the package, without .py) and the test file it should have."""
    found = {}
    for module in sorted(PACKAGE.rglob("*.py")):
        relative = module.relative_to(PACKAGE)
        if module.name == "__init__.py" or relative.parts[0] == "script":
            continue
        found[str(relative.with_suffix(""))] = UNIT / relative.parent / f"test_{module.name}"
    return found


def test_every_module_has_its_test_file():
    missing = sorted(module for module, test in expected_tests().items()
                     if not test.exists() and module not in NO_TEST_FILE_YET)
    assert missing == [], "add tests/unit/<folder>/test_<module>.py for each"


def test_the_list_of_modules_without_one_is_current():
    tested = {module for module, test in expected_tests().items() if test.exists()}
    assert NO_TEST_FILE_YET & tested == set(), "these have their test file now: take them off the list"
    assert NO_TEST_FILE_YET <= expected_tests().keys(), "these modules are gone: take them off the list"
