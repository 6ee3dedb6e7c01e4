import pytest

from stratus_harness import Stratus


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, "report_" + report.when, report)


@pytest.fixture
def start_stratus(tmp_path, request):
    """A factory: start_stratus(args=..., env=...) starts a Stratus; all are stopped afterwards."""
    started = []

    def start(name="stratus", **kwargs):
        server = Stratus(tmp_path / name, **kwargs)
        server.workdir.mkdir(parents=True, exist_ok=True)
        started.append(server)
        return server.start()

    yield start
    failed = getattr(request.node, "report_call", None) is not None and request.node.report_call.failed
    for server in started:
        server.stop(timeout=40)
        if failed:
            print(f"\n--- log of {server.workdir.name} ({server.log_path}) ---\n{server.log()[-4000:]}")


@pytest.fixture
def stratus(start_stratus):
    return start_stratus()
