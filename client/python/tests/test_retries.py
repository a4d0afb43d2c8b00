"""Retries of idempotent calls and wait_for_ready, against real servers that are stopped,
restarted, or not listening yet (on a port held for the test, so nobody else takes it)."""

import threading
import time

import grpc
import numpy as np
import pytest

import tpserve
from conftest import ServerProcess, random_inputs, reserve_port

PATIENT = tpserve.RetryPolicy(max_attempts=60, initial_backoff_s=0.05, max_backoff_s=0.25)


@pytest.fixture
def restartable(tmp_path):
    holder = reserve_port()
    # A short grace: SIGTERM otherwise waits for it (seconds) with a client still connected.
    process = ServerProcess(tmp_path / "models", tmp_path, ["--shutdown_grace_seconds=0.5"],
                            port=holder.getsockname()[1])
    yield process
    process.stop()
    holder.close()


class start_later:
    """Starts `process` after `delay_s` on a thread of its own; join() re-raises a failed start."""

    def __init__(self, process, delay_s):
        self._error = None
        self._thread = threading.Thread(target=self._run, args=(process, delay_s))
        self._thread.start()

    def _run(self, process, delay_s):
        time.sleep(delay_s)
        try:
            process.start()
        except BaseException as error:  # noqa: BLE001 - pytest.fail raises an OutcomeException
            self._error = error

    def join(self):
        self._thread.join()
        if self._error is not None:
            raise self._error


def test_idempotent_calls_are_retried_across_a_server_restart(restartable):
    restartable.start()
    with tpserve.Client(restartable.target, retry=PATIENT, timeout=60) as client:
        info = client.create_model("kept", "3x0e + 2x1o", "2x0e + 1x1o", "3x0e + 2x1o", seed=4)
        x1, x2 = random_inputs(info, 4, np.float64)
        before = client.forward("kept", x1, x2)
        weights = client.download_weights("kept")

        restartable.stop()
        with tpserve.Client(restartable.target, retry=tpserve.NO_RETRIES) as impatient:
            with pytest.raises(tpserve.Unavailable):  # nobody there: without retries the call fails at once
                impatient.forward("kept", x1, x2, timeout=5)

        retries_before = client.retry_count
        restart = start_later(restartable, 1.0)
        start = time.monotonic()
        after = client.forward("kept", x1, x2)  # retried until the restarted server answers
        elapsed = time.monotonic() - start
        restart.join()
        assert client.retry_count > retries_before, "the call succeeded without a retry: the server never went away"
        assert elapsed >= 0.5, elapsed
        np.testing.assert_array_equal(after, before)  # the model came back from disk unchanged

        restartable.kill()  # a crash this time
        restart = start_later(restartable, 1.0)
        assert client.get_model("kept").version == info.version
        restart.join()
        restartable.stop()
        restart = start_later(restartable, 1.0)
        assert [m.name for m in client.list_models()] == ["kept"]
        restart.join()
        restartable.stop()
        restart = start_later(restartable, 1.0)
        np.testing.assert_array_equal(client.download_weights("kept"), weights)
        restart.join()


def test_calls_that_change_state_are_not_retried(restartable):
    restartable.start()
    with tpserve.Client(restartable.target, retry=PATIENT, timeout=30) as client:
        info = client.create_model("m", "2x0e", "2x0e", "2x0e", seed=1)
        x1, x2 = random_inputs(info, 2)
        restartable.stop()
        calls = {
            "Backward": lambda: client.backward("m", x1, x2, loss="sum", weight_grad="accumulate"),
            "SgdStep": lambda: client.sgd_step("m", 0.1),
            "UploadWeights": lambda: client.upload_weights("m", np.zeros(info.weight_numel, np.float32)),
            "CreateModel": lambda: client.create_model("n", "2x0e", "2x0e", "2x0e"),
            "DeleteModel": lambda: client.delete_model("m"),
            "ZeroGradient": lambda: client.zero_gradient("m"),
            # An empty buffer after a restart would read as zeros: never retried.
            "GetGradient": lambda: client.get_gradient("m"),
            "BackwardChunked": lambda: client.backward_chunked("m", x1, x2, loss="sum"),
            # Streaming calls started just as the server left once hung past their deadline in
            # grpcio 1.51 (see Client.__init__); they must fail at once.
            "Stream": lambda: list(client.stream([tpserve.StreamEcho(b"x")], timeout=10)),
        }
        for method, call in calls.items():
            start = time.monotonic()
            with pytest.raises(tpserve.Unavailable) as error:
                call()
            assert error.value.attempts == 1, method
            assert error.value.code == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() - start < 5, method
        assert client.retry_count == 0


def test_retries_give_up_after_max_attempts(restartable):
    restartable.start()
    port = restartable.port
    restartable.stop()
    policy = tpserve.RetryPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.02)
    with tpserve.Client(f"127.0.0.1:{port}", retry=policy) as client:
        with pytest.raises(tpserve.Unavailable) as error:
            client.list_models(timeout=20)
        assert error.value.attempts == 3
        assert client.retry_count == 2


def test_wait_for_ready_waits_for_a_server_that_is_not_listening_yet(restartable):
    with tpserve.Client(f"127.0.0.1:{restartable.requested_port}",
                        wait_for_ready=True, retry=tpserve.NO_RETRIES, timeout=60) as client:
        starting = start_later(restartable, 1.0)
        start = time.monotonic()
        assert client.list_models() == []
        elapsed = time.monotonic() - start
        starting.join()
        assert elapsed >= 0.5, elapsed
        assert client.retry_count == 0  # waiting, not retrying
