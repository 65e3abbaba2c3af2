"""Build of fastcnn's compiled kernels.

Environment switches:
    FASTCNN_NO_OPENMP=1   build without OpenMP (kernels run on one thread)
    FASTCNN_DEBUG=1       bounds and wraparound checks on, no -O3: for tests
"""
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import warnings

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNELS = {
    # extension module -> sources: one concern per compiled file
    "fastcnn._kernels.correlation": ["src/correlation.pyx", "src/gemm.c"],
    "fastcnn._kernels.dense": ["src/dense.pyx", "src/gemm.c"],
    "fastcnn._kernels.pooling": ["src/pooling.pyx"],
    "fastcnn._kernels.activations": ["src/activations.pyx"],
    "fastcnn._kernels.optim": ["src/optim.pyx"],
    "fastcnn._kernels.loss": ["src/loss.pyx"],
    "fastcnn._kernels.batch": ["src/batch.pyx"],
    "fastcnn._kernels.openmp_helpers": ["src/openmp_helpers.pyx"],
}


def env_flag(name):
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


DEBUG = env_flag("FASTCNN_DEBUG")


def openmp_flags(compiler):
    """Compile and link flags for OpenMP, or None when the compiler lacks it."""
    if env_flag("FASTCNN_NO_OPENMP"):
        return None
    if compiler.compiler_type == "msvc":
        candidates = [(["/openmp"], [])]
    elif sys.platform == "darwin":
        # Apple clang needs libomp (e.g. from Homebrew); plain -fopenmp fails
        candidates = [(["-Xpreprocessor", "-fopenmp"], ["-lomp"]), (["-fopenmp"], ["-fopenmp"])]
    else:
        candidates = [(["-fopenmp"], ["-fopenmp"])]
    source = textwrap.dedent("""
        #include <omp.h>
        int main(void) {
            int n = 0;
            #pragma omp parallel reduction(+:n)
            n += 1;
            return n > 0 ? 0 : 1;
        }
    """)
    tmp = tempfile.mkdtemp()
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(source)
        for compile_flags, link_flags in candidates:
            try:
                objs = compiler.compile([src], output_dir=tmp, extra_postargs=compile_flags)
                compiler.link_executable(objs, "probe", output_dir=tmp, extra_postargs=link_flags)
                if compiler.compiler_type != "msvc":
                    subprocess.run([os.path.join(tmp, "probe")], check=True)
                return compile_flags, link_flags
            except Exception:
                continue
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return None


class BuildExt(build_ext):
    def build_extensions(self):
        flags = openmp_flags(self.compiler)
        if flags is None:
            if not env_flag("FASTCNN_NO_OPENMP"):
                warnings.warn(
                    "fastcnn: the C compiler does not support OpenMP; the kernels "
                    "are built single-threaded. On macOS install libomp "
                    "(brew install libomp) and build again for multi-core speed.")
            compile_flags, link_flags = [], []
        else:
            compile_flags, link_flags = flags
        if self.compiler.compiler_type == "msvc":
            opt = ["/Od"] if DEBUG else ["/O2"]
        else:
            # -fno-math-errno: sqrt need not set errno, so loops calling it
            # vectorise (the kernels never read errno)
            opt = (["-O0", "-g"] if DEBUG else ["-O3"]) + ["-fno-math-errno"]
        for ext in self.extensions:
            ext.extra_compile_args = opt + compile_flags + ext.extra_compile_args
            ext.extra_link_args = link_flags + ext.extra_link_args
        super().build_extensions()


extensions = [
    Extension(
        name,
        sources,
        include_dirs=["src", numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
    )
    for name, sources in KERNELS.items()
]

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}

setup(
    ext_modules=cythonize(extensions, compiler_directives=directives,
                          build_dir="build/cython", include_path=["src"]),
    cmdclass={"build_ext": BuildExt},
)
