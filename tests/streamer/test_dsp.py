"""streamer.dsp's FFT: scipy.fft's results, bit for bit, without importing scipy.fft."""

import subprocess
import sys

import numpy as np
import pytest
from scipy import fft as sp_fft

from streamer import dsp

from conftest import REPO, modules_after


def test_the_pocketfft_extension_loads_here():
    """On this scipy the fast path is taken (else every case below would compare scipy with itself)."""
    assert dsp._pocketfft() is not None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, axis", [((400,), -1), ((37, 400), -1), ((37, 400), 1), ((400, 37), 0),
                                         ((3, 5, 64), 1)])
@pytest.mark.parametrize("n", [None, 512, 256, 401])
def test_rfft_equals_scipy_bit_for_bit(dtype, shape, axis, n):
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    got, want = dsp.rfft(x, n, axis=axis), sp_fft.rfft(x, n=n, axis=axis)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128])
@pytest.mark.parametrize("shape, axis", [((257,), -1), ((9, 257), 1), ((257, 9), 0)])
@pytest.mark.parametrize("n", [None, 512, 511, 300])
def test_irfft_equals_scipy_bit_for_bit(dtype, shape, axis, n):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        x = x + 1j * rng.standard_normal(shape)
    x = x.astype(dtype)
    got, want = dsp.irfft(x, n, axis=axis), sp_fft.irfft(x, n=n, axis=axis)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(got, want)


def test_frames_strided_and_odd_inputs_take_scipys_own_path():
    """A strided view, integers and float16 give what scipy.fft gives (its conversions), and its errors."""
    x = np.random.default_rng(2).standard_normal((20, 300)).astype(np.float32)
    fr = dsp.frames(x.ravel(), 400, 160)
    assert np.array_equal(dsp.rfft_frames(fr, dsp.hann(400), 512), sp_fft.rfft(fr * dsp.hann(400), n=512, axis=-1))
    for y in (np.arange(64), x[:, ::3], x.astype(np.float16), x.astype(">f4")):
        got, want = dsp.rfft(y), sp_fft.rfft(y)
        assert got.dtype == want.dtype and np.array_equal(got, want)
    with pytest.raises(ValueError):
        dsp.rfft(x, 0)
    for f, g in ((dsp.rfft, sp_fft.rfft), (dsp.irfft, sp_fft.irfft)):   # a bad axis: scipy's own error
        with pytest.raises(Exception) as want:
            g(x, axis=2)
        with pytest.raises(want.type):
            f(x, axis=2)
    with pytest.raises(ValueError):
        dsp.irfft(np.zeros(1, np.complex64))


def test_the_replay_start_path_imports_no_scipy():
    """`import scipy.fft` (scipy.special, linalg, sparse) cost ~0.2 CPU s of every command's start-up;
    the modules a replay imports before its first window, and a log-mel frame, need none of scipy but
    its FFT extension."""
    code = ("import numpy as np\n"
            "import streamer.cli as cli\n"
            "cli.build_parser(['replay'])\n"
            "import streamer.commands.common, streamer.pipeline, streamer.presence, streamer.sources\n"
            "from streamer.features import frame_log_mel\n"
            "frame_log_mel(np.random.default_rng(0).standard_normal((10, 400)).astype(np.float32))\n")
    # the extension alone (its own name)
    assert modules_after(code, ["scipy"]) == ["scipy.fft._pocketfft.pypocketfft"]


def test_scipy_fft_imported_after_the_extension_shares_it():
    """A process that loads the extension through dsp and imports scipy.fft later (training, the
    descriptor models' DCT) gets a working scipy.fft, running the same extension module."""
    code = ("import sys, numpy as np\n"
            "from streamer import dsp\n"
            "x = np.random.default_rng(0).standard_normal((5, 400)).astype(np.float32)\n"
            "a = dsp.rfft(x, 512)\n"
            "import scipy.fft\n"
            "assert scipy.fft._pocketfft.basic.pfft is sys.modules['scipy.fft._pocketfft.pypocketfft']\n"
            "assert np.array_equal(a, scipy.fft.rfft(x, 512)) and scipy.fft.dct(np.eye(4)).shape == (4, 4)\n"
            "print('ok')\n")
    cp = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert cp.returncode == 0 and cp.stdout.strip() == "ok", cp.stderr
