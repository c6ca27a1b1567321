"""The Django project package, which must also be Python's standard ``platform`` module.

The design card names this package ``platform``, which shadows the standard library module of the same
name. torch, transformers and many other libraries ``import platform`` and call ``platform.system()``, so
we execute the standard module's source in this package's namespace: both ``platform.system()`` and
``platform.settings`` then work in one process.
"""

import os as _os
import sysconfig as _sysconfig

_STDLIB_PLATFORM = _os.path.join(_sysconfig.get_path("stdlib"), "platform.py")
with open(_STDLIB_PLATFORM, encoding="utf-8") as _source:
    exec(compile(_source.read(), _STDLIB_PLATFORM, "exec"))
