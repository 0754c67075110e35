"""The assistant's `preview_style` tool: queues a preview of the customer's own dog's photo, and
refuses another client's pet (the ids come from the model, so they are checked)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import func, select

from core import customers
from core.booking.service import DefaultBookingService
from core.conversation.ingest import ingest
from core.conversation.tools import ToolBox, ToolContext
from core.db.database import Database
from core.db.models import GroomingDesign, Job
from core.llm.types import ToolCall
from core.previews.fal import FalEditor
from core.previews.service import GENERATE_JOB, Previews
from core.previews.styles import load_styles
from core.settings import Settings
from core.storage import StoredObject, link_pet_photo, media_storage
from core.types import Channel, InboundMessage

CATALOG = Path(__file__).resolve().parents[2] / "catalog.toml"


async def test_preview_style_tool_own_pets_only(db: Database, settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"fal_ai_key": SecretStr("k"), "media_dir": str(tmp_path)})
    assert settings.fal_ai_key is not None
    editor = FalEditor(
        key=settings.fal_ai_key, model=settings.fal_model, queue_base=None, jwks_url="http://x"
    )
    previews = Previews(
        db=db,
        settings=settings,
        storage=media_storage(settings),
        editor=editor,
        styles=load_styles(CATALOG),
        fetchers={},
    )
    toolbox = ToolBox(DefaultBookingService(settings, None), settings.tz, previews=previews)
    assert {"preview_style", "list_styles"} <= set(toolbox.tools)
    async with db.transaction() as session:
        mine = await ingest(session, InboundMessage(Channel.WEB, "session-mine-1", "m1", text="hi"))
        other = await ingest(session, InboundMessage(Channel.WEB, "session-other-1", "m2", text="hi"))
        dog = await customers.save_pet(session, client_id=mine.client_id, name="Bella")
        stranger = await customers.save_pet(session, client_id=other.client_id, name="Rex")
        for pet in (dog, stranger):
            stored = StoredObject(
                f"pets/{pet.id}/photo/p.jpg", f"/media/pets/{pet.id}/photo/p.jpg", "image/jpeg"
            )
            await link_pet_photo(session, pet_id=pet.id, stored=stored, kind="photo")
    ctx = ToolContext(mine.conversation_id, mine.client_id, "web")
    async with db.transaction() as session:
        styles = await toolbox.run(session, ctx, ToolCall("c0", "list_styles", {}))
        ok = await toolbox.run(
            session, ctx, ToolCall("c1", "preview_style", {"style_code": "lion_cut", "pet_id": dog.id})
        )
        refused = await toolbox.run(
            session, ctx, ToolCall("c2", "preview_style", {"style_code": "lion_cut", "pet_id": stranger.id})
        )
        unknown = await toolbox.run(session, ctx, ToolCall("c3", "preview_style", {"style_code": "mohawk"}))
    assert "teddy_bear" in styles.content and not styles.is_error
    assert not ok.is_error and "Bella's lion cut preview" in json.loads(ok.content)["tell_customer"]
    assert refused.is_error and "not this customer's" in refused.content
    assert "don't know that style" in json.loads(unknown.content)["tell_customer"]
    async with db.transaction() as session:
        rows = list(await session.scalars(select(GroomingDesign)))
        queued = await session.scalar(select(func.count()).select_from(Job).where(Job.kind == GENERATE_JOB))
    assert [(r.pet_id, r.style_code, r.photo_key) for r in rows] == [
        (dog.id, "lion_cut", f"pets/{dog.id}/photo/p.jpg")
    ]
    assert queued == 1
    await editor.close()
