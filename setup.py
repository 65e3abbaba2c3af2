"""Build of fastcnn's compiled kernels.

Environment switches:
    FASTCNN_NO_OPENMP=1   build without OpenMP (kernels run on one thread)
    FASTCNN_DEBUG=1       bounds and wraparound checks on, no -O3: for tests
    FASTCNN_OPT_LEVEL=N   gcc/clang -ON instead of -O3 (0, 1, 2, 3, s or g), e.g.
                          1 for sanitizer builds (.ci/sanitizers), which take
                          3 to 4 times as long to compile at -O3
"""
import os
import platform
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
    "fastcnn._kernels.gemm": ["src/gemm.pyx", "src/gemm/scratch.c", "src/gemm/pack.c",
                              "src/gemm/pack_avx512.c", "src/gemm/kernel_generic.c",
                              "src/gemm/kernel_avx512.c",
                              "src/gemm/dot.c", "src/gemm/driver.c"],
    # these cimport gemm: they call its functions through that module
    "fastcnn._kernels.correlation": ["src/correlation.pyx"],
    "fastcnn._kernels.winograd": ["src/winograd.pyx"],
    "fastcnn._kernels.dense": ["src/dense.pyx"],
    "fastcnn._kernels.pooling": ["src/pooling.pyx"],
    "fastcnn._kernels.activations": ["src/activations.pyx"],
    "fastcnn._kernels.optim": ["src/optim.pyx"],
    "fastcnn._kernels.loss": ["src/loss.pyx"],
    "fastcnn._kernels.batch": ["src/batch.pyx"],
    "fastcnn._kernels.openmp_helpers": ["src/openmp_helpers.pyx"],
    "fastcnn._kernels.dropout": ["src/dropout.pyx"],
    "fastcnn._kernels.global_pooling": ["src/global_pooling.pyx"],
    "fastcnn._kernels.normalization": ["src/normalization.pyx"],
}


def env_flag(name):
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


DEBUG = env_flag("FASTCNN_DEBUG")
OPT_LEVEL = os.environ.get("FASTCNN_OPT_LEVEL", "").strip() or "3"
if OPT_LEVEL not in {"0", "1", "2", "3", "s", "g"}:
    sys.exit(f"FASTCNN_OPT_LEVEL must be 0, 1, 2, 3, s or g, not {OPT_LEVEL!r}")


def sanitized(compiler):
    """True when the configured compile or link command (CFLAGS, LDFLAGS)
    turns on a sanitizer."""
    commands = getattr(compiler, "compiler_so", []) + getattr(compiler, "linker_so", [])
    return any(arg.startswith("-fsanitize=") for arg in commands)


def openmp_flags(compiler):
    """Compile and link flags for OpenMP, or None when the compiler lacks it.

    The probe is compiled and linked exactly as build_ext builds the
    extensions: the compiler's configured commands (so CFLAGS and LDFLAGS
    too) and a shared object linked by its linker_so. It is then loaded and
    run in a separate interpreter, which finds runtime libraries that link
    but do not load (libomp outside the loader's path on macOS). Not when a
    sanitizer is on: a sanitized object loads only into a process started
    with the sanitizer's runtime, which this interpreter is not; the link
    is the test then.
    """
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
        #ifdef _WIN32
        __declspec(dllexport)
        #endif
        int fcnn_openmp_probe(void) {
            int n = 0;
            #pragma omp parallel reduction(+:n)
            n += 1;
            return n > 0 && omp_get_max_threads() > 0 ? 0 : 1;
        }
    """)
    load = ("import ctypes, sys\n"
            "sys.exit(ctypes.CDLL(sys.argv[1]).fcnn_openmp_probe())\n")
    run = compiler.compiler_type != "msvc" and not sanitized(compiler)
    tmp = tempfile.mkdtemp()
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(source)
        for i, (compile_flags, link_flags) in enumerate(candidates):
            try:
                objs = compiler.compile([src], output_dir=os.path.join(tmp, str(i)),
                                        extra_postargs=compile_flags)
                probe = compiler.shared_object_filename(f"probe{i}", output_dir=tmp)
                compiler.link_shared_object(objs, probe, extra_postargs=link_flags)
                if run:
                    subprocess.run([sys.executable, "-c", load, probe], check=True,
                                   timeout=60)
                return compile_flags, link_flags
            except Exception:
                continue
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return None


# the extensions whose loops call libmvec's vector functions when it links
LIBMVEC_USERS = {"fastcnn._kernels.activations", "fastcnn._kernels.normalization"}
# gcc/clang flags of single extensions: the activations' float32 exp and erfc
# clamp with selects that GCC if-converts (so vectorises) without AVX-512
# only when floating-point operations may not trap; no kernel reads the
# floating-point exception flags (the normalization's ReLU gradient is such
# a select too); the normalization's sums in lanes give the same bits in
# every build only without fused multiply-adds
GCC_EXTRA_FLAGS = {"fastcnn._kernels.activations": ["-fno-trapping-math"],
                   "fastcnn._kernels.normalization": ["-fno-trapping-math",
                                                      "-ffp-contract=off"]}


def libmvec_links(compiler):
    """Whether glibc's vector math library links (and loads) here: GCC on
    x86-64 Linux with glibc 2.35 or later, for the vector tanh, exp, expm1,
    erfc and pow that src/vector_math.h declares (ctypes loads with
    RTLD_NOW, so an older libmvec without the first four fails here; pow has
    been there since glibc 2.22). Without it those loops call the scalar
    libm functions."""
    if (compiler.compiler_type != "unix" or not sys.platform.startswith("linux")
            or platform.machine() not in {"x86_64", "AMD64"}):
        return False
    source = textwrap.dedent("""
        #include <math.h>
        __attribute__((simd("notinbranch"))) double erfc(double);
        __attribute__((simd("notinbranch"))) float expm1f(float);
        void fcnn_libmvec_probe(const double *x, double *y, const float *u, float *v) {
            #pragma omp simd
            for (int i = 0; i < 8; ++i) y[i] = erfc(x[i]);
            #pragma omp simd
            for (int i = 0; i < 16; ++i) v[i] = expm1f(u[i]);
        }
    """)
    tmp = tempfile.mkdtemp()
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(source)
        objs = compiler.compile([src], output_dir=tmp,
                                extra_postargs=["-O2", "-fopenmp-simd", "-fno-math-errno"])
        probe = compiler.shared_object_filename("libmvec_probe", output_dir=tmp)
        compiler.link_shared_object(objs, probe, extra_postargs=["-lmvec", "-lm"])
        if not sanitized(compiler):
            subprocess.run([sys.executable, "-c", "import ctypes, sys; ctypes.CDLL(sys.argv[1])",
                            probe], check=True, timeout=60)
        return True
    except Exception:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
            opt = (["-O0", "-g"] if DEBUG else [f"-O{OPT_LEVEL}"]) + ["-fno-math-errno"]
        libmvec = libmvec_links(self.compiler)
        for ext in self.extensions:
            ext.extra_compile_args = opt + compile_flags + ext.extra_compile_args
            ext.extra_link_args = link_flags + ext.extra_link_args
            if self.compiler.compiler_type != "msvc":
                ext.extra_compile_args += GCC_EXTRA_FLAGS.get(ext.name, [])
            if libmvec and ext.name in LIBMVEC_USERS:
                ext.define_macros.append(("FCNN_HAVE_LIBMVEC", "1"))
                ext.extra_link_args += ["-lmvec", "-lm"]
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
                          build_dir="build/cython", include_path=["src", "."]),
    cmdclass={"build_ext": BuildExt},
)
