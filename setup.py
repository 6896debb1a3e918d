"""Package discovery: `services`, `mlops` and `ops` as found, plus `operator/` installed as `dreambot_operator`.

A package named `operator` would shadow Python's standard library, and pyproject.toml alone cannot
combine automatic discovery with a renamed folder.
"""

from setuptools import find_packages, setup

operator_pkgs = ["dreambot_operator"] + [
    "dreambot_operator." + p for p in find_packages(where="operator")
]
setup(
    packages=find_packages(include=["services", "services.*", "mlops", "mlops.*", "ops", "ops.*"]) + operator_pkgs,
    package_dir={"dreambot_operator": "operator"},
)
