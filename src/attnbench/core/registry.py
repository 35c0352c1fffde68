"""Name → class registries for the pluggable parts (backends, models, masks), filled by decorators in the modules of
a package, which are imported on first use: a new part is a new module, with nothing else to edit."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, Generic, TypeVar

from attnbench.core.errors import ConfigError

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    def __init__(self, group: str, package: str) -> None:
        self.group, self.package = group, package
        self.classes: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorate(cls: T) -> T:
            cls.name = name
            self.classes[name] = cls
            return cls

        return decorate

    def all(self) -> dict[str, T]:
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{self.package}.{module.name}")
        return dict(self.classes)

    def get(self, name: str) -> T:
        found = self.all()
        if name not in found:
            raise ConfigError(f"{self.group}.name", name, f"one of {sorted(found)}")
        return found[name]
