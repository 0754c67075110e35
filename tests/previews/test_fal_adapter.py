"""The real fal-client, through core/previews/fal.py, against the local fake FAL queue."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr

from core.previews.fal import FalEditor, _translate
from core.previews.ports import ImageEditError, ImageEditRejectedError
from tests.fakes.fal import FakeFal, jpeg

MODEL = "fal-ai/nano-banana-2/edit"
PHOTO = "data:image/jpeg;base64,/9j/4AAQSkZJRg=="


@pytest.fixture
async def fal() -> AsyncIterator[FakeFal]:
    fake = FakeFal()
    await fake.start()
    yield fake
    await fake.stop()


def editor(fal: FakeFal, *, model: str = MODEL, key: str = "test-key") -> FalEditor:
    return FalEditor(
        key=SecretStr(key), model=model, queue_base=fal.base, jwks_url=fal.base + "/.well-known/jwks.json"
    )


async def test_submit_status_result_download(fal: FakeFal) -> None:
    fal.polls_before_done = 2
    client = editor(fal)
    try:
        request_id = await client.submit(prompt="teddy bear cut", image_url=PHOTO, seed=7, webhook_url=None)
        assert [s.endpoint for s in fal.submissions] == [MODEL]
        sent = fal.submissions[0].arguments
        assert sent["image_urls"] == [PHOTO] and sent["seed"] == 7
        assert sent["enable_safety_checker"] is True
        assert fal.auth_seen == ["Key test-key"]
        first = await client.status(request_id)
        second = await client.status(request_id)
        third = await client.status(request_id)
        assert (first.done, first.position, second.done, third.done) == (False, 0, False, True)
        result = await client.result(request_id)
        assert result.seed == 7 and len(result.image_urls) == 1 and result.nsfw == (False,)
        assert await client.download(result.image_urls[0], max_bytes=1_000_000) == jpeg((90, 160, 210))
    finally:
        await client.close()


async def test_a_new_client_resumes_a_stored_request_id(fal: FakeFal) -> None:
    fal.polls_before_done = 1
    first = editor(fal)
    request_id = await first.submit(prompt="lion cut", image_url=PHOTO, seed=None, webhook_url=None)
    await first.close()
    again = editor(fal)  # after a restart: only the id survived
    try:
        assert (await again.status(request_id)).done is False
        assert (await again.status(request_id)).done is True
        assert (await again.result(request_id)).image_urls
        assert len(fal.submissions) == 1
    finally:
        await again.close()


async def test_webhook_url_is_passed_to_the_queue(fal: FakeFal) -> None:
    fal.hold()
    client = editor(fal)
    try:
        await client.submit(
            prompt="p", image_url=PHOTO, seed=None, webhook_url="https://salon.example/webhook/fal"
        )
        assert fal.submissions[0].webhook == "https://salon.example/webhook/fal"
    finally:
        await client.close()


async def test_cancel(fal: FakeFal) -> None:
    fal.hold()
    client = editor(fal)
    try:
        request_id = await client.submit(prompt="p", image_url=PHOTO, seed=None, webhook_url=None)
        await client.cancel(request_id)
        assert fal.requests[request_id].cancelled
    finally:
        await client.close()


async def test_kontext_takes_a_single_image_url(fal: FakeFal) -> None:
    client = editor(fal, model="fal-ai/flux-pro/kontext")
    try:
        request_id = await client.submit(prompt="p", image_url=PHOTO, seed=None, webhook_url=None)
        assert fal.submissions[0].arguments["image_url"] == PHOTO
        assert (await client.status(request_id)).done
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("status", "final", "configuration"),
    [(422, True, False), (401, True, True), (404, True, True), (500, False, False), (503, False, False)],
)
async def test_errors_map_to_retryable_or_final(
    fal: FakeFal, status: int, final: bool, configuration: bool
) -> None:
    fal.fail_next("submit", status, detail="scripted failure")
    client = editor(fal)
    try:
        with pytest.raises(ImageEditError) as caught:
            await client.submit(prompt="p", image_url=PHOTO, seed=None, webhook_url=None)
        assert isinstance(caught.value, ImageEditRejectedError) is final
        if final:
            assert isinstance(caught.value, ImageEditRejectedError)
            assert caught.value.configuration is configuration and caught.value.status == status
        assert "scripted failure" in str(caught.value)
        assert fal.submissions == []
    finally:
        await client.close()


async def test_validation_error_detail_list_and_unknown_request(fal: FakeFal) -> None:
    client = editor(fal)
    try:
        with pytest.raises(ImageEditRejectedError) as caught:
            await client.submit(prompt="", image_url=PHOTO, seed=None, webhook_url=None)
        assert caught.value.status == 422
        with pytest.raises(ImageEditRejectedError) as missing:
            await client.status("req-404")
        assert missing.value.status == 404
    finally:
        await client.close()


async def test_status_and_result_errors(fal: FakeFal) -> None:
    client = editor(fal)
    try:
        request_id = await client.submit(prompt="p", image_url=PHOTO, seed=None, webhook_url=None)
        fal.fail_next("status", 500)
        with pytest.raises(ImageEditError):
            await client.status(request_id)
        fal.fail_next("result", 400, detail="bad")
        with pytest.raises(ImageEditRejectedError):
            await client.result(request_id)
        assert (await client.result(request_id)).image_urls
    finally:
        await client.close()


def test_transport_failures_are_retryable() -> None:
    # fal-client itself retries connection errors ~10 times (tens of seconds): what reaches us after
    # that is retryable, for the job's own backoff.
    error = _translate(httpx.ConnectError("refused"))
    assert isinstance(error, ImageEditError) and not isinstance(error, ImageEditRejectedError)


async def test_jwks_is_fetched_once_and_cached(fal: FakeFal) -> None:
    client = editor(fal)
    try:
        keys = await client.signing_keys()
        assert keys == fal.jwks["keys"]
        await fal.stop()
        assert await client.signing_keys() == keys  # from the cache
    finally:
        await client.close()
