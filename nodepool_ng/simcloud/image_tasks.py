"""Image v2 (glance) tasks: the task-import flow of clouds whose profile says
`image_upload: task` (Rackspace's). `POST /v2/tasks` (type `import`) reads the object from the
cloud's object store, detects its format from the data and fails the task if the cloud does not
take it, as Rackspace's conversion service did.
"""

from __future__ import annotations

import time
from typing import Any

from nodepool_ng.simcloud.http import Request, Response, RouteGroup, handles
from nodepool_ng.simcloud.image import (
    IMPORT_METHODS,
    ImageService,
    detect_format,
    store_image_data,
)
from nodepool_ng.simcloud.state import CloudState, Image, Task, iso, new_id


class ImageTaskRoutes(RouteGroup):
    """`/v2/info/import` and `/v2/tasks` on an `ImageService`."""

    def __init__(self, images: ImageService) -> None:
        self.images = images
        super().__init__(images)

    @handles("GET", "/v2/info/import")
    def import_info(self, req: Request) -> Response:
        return Response(200, {"import-methods": {
            "description": "Import methods available.", "type": "array",
            "value": IMPORT_METHODS.split(",")}})

    def task_view(self, task: Task) -> dict[str, Any]:
        return {"id": task.id, "type": task.type, "status": task.status,
                "input": task.input, "result": task.result, "message": task.message,
                "owner": "", "created_at": iso(task.created), "updated_at": iso(task.created),
                "expires_at": None, "self": f"/v2/tasks/{task.id}",
                "schema": "/v2/schemas/task"}

    @handles("POST", "/v2/tasks")
    def create_task(self, req: Request) -> Response:
        body = req.json()
        if not isinstance(body, dict) or body.get("type") != "import":
            raise self.images.error(400, "Task type must be 'import'")
        task_input = body.get("input")
        if not isinstance(task_input, dict) or not isinstance(
                task_input.get("import_from"), str):
            raise self.images.error(400, "Task input must contain 'import_from'")
        state = req.state
        if state.profile.image_upload != "task":
            raise self.images.error(403, "Image import tasks are not enabled on this cloud")
        task = Task(new_id(), "import", task_input, time.time())
        with state.lock:
            self._run_import(state, task)
            state.tasks[task.id] = task
            view = self.task_view(task)
        view["status"] = "pending"  # the import has not "started" yet from the client's view
        return Response(201, view)

    def _run_import(self, state: CloudState, task: Task) -> None:
        container, _, name = task.input["import_from"].partition("/")
        stored = state.objects.get(container, {}).get(name)
        if stored is None:
            task.status, task.message = "failure", f"Object {container}/{name} not found"
            return
        data = stored[0]
        found = detect_format(data)
        if found not in state.profile.image_formats:
            task.status = "failure"
            task.message = (f"Image import failed: disk format {found} is not accepted by "
                            f"this cloud (accepts {', '.join(state.profile.image_formats)})")
            return
        props = task.input.get("image_properties") or {}
        now = time.time()
        img = Image(new_id(), str(props.get("name") or name), now, disk_format=found,
                    container_format="bare", updated=now)
        store_image_data(state, img, data)
        state.images[img.id] = img
        task.status, task.result = "success", {"image_id": img.id}

    @handles("GET", "/v2/tasks")
    def list_tasks(self, req: Request) -> Response:
        with req.state.lock:
            tasks = [self.task_view(t) for t in req.state.tasks.values()]
        return Response(200, {"tasks": tasks, "schema": "/v2/schemas/tasks"})

    @handles("GET", "/v2/tasks/([^/]+)")
    def show_task(self, req: Request) -> Response:
        with req.state.lock:
            task = req.state.tasks.get(req.params[0])
            if task is None:
                raise self.images.error(404, f"Task with identifier {req.params[0]} not found")
            return Response(200, self.task_view(task))
