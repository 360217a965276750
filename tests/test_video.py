"""Video: reading and writing with PyAV, the moving-shapes world, VideoCaptioner with both trackers, `sca video`,
and its bad inputs. Videos are written by the tests themselves."""

import itertools
import json

import numpy as np
import pytest
import torch
from PIL import Image

from sca.api import RegionCaptioner
from sca.cli import main
from sca.data.sources.moving_shapes import MovingShapesWorld
from sca.errors import InputError
from sca.geometry import mask_box
from sca.masks import decode_rle
from sca.models.mask_caption_decoder import DecoderState
from sca.options import VideoOptions
from sca.video.captioner import Track, VideoCaptioner
from sca.video.io import VideoWriter, read_frames, video_info, write_video
from sca.video.trackers import MemoryTracker, VideoFrame

from builders import save_tiny_lm, tiny_sam2_video

LENIENT = dict(min_track_score=0.0, min_track_overlap=0.0, max_area_change=1e9, max_neighbour_share=1.0,
               max_colour_change=1.0)
"""Track rules that let a random tiny model's masks go on (the tests of keyframes and views, not of identity)."""


def _world(**options) -> MovingShapesWorld:
    return MovingShapesWorld.split("test", **{"frames": 8, "image_size": 64, **options})


@pytest.fixture(scope="module")
def region_model(tiny_model_dir):
    return RegionCaptioner.from_pretrained(tiny_model_dir).model


@pytest.fixture(scope="module")
def video_file(tmp_path_factory):
    frames = _world().video(0)
    path = write_video(tmp_path_factory.mktemp("video") / "shapes.mp4", [f.image for f in frames], fps=8)
    return path, frames


@pytest.fixture(scope="module")
def sam2_video_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-sam2-video")
    torch.manual_seed(0)
    tiny_sam2_video().save_pretrained(folder)
    return folder


# ---------------------------------------------------------------------- the world and the files


def test_moving_world_is_deterministic_and_objects_keep_their_captions():
    world = _world(frames=30, speed=(2.0, 4.0))
    first, again = world.video(3), world.video(3)
    assert all(np.array_equal(np.asarray(a.image), np.asarray(b.image)) for a, b in zip(first, again))
    captions = {}
    for frame in first:
        for object_id, caption in frame.captions.items():
            assert captions.setdefault(object_id, caption) == caption
            assert frame.masks[object_id].shape == (frame.image.height, frame.image.width)
    movements = []
    for index in range(10):
        start, later = world.video(index)[0], world.video(index)[4]
        movements += [abs(mask_box(later.masks[i])[0] - mask_box(start.masks[i])[0])
                      for i in start.masks if start.whole[i] and later.whole.get(i)]
    assert movements and all(m >= 4 for m in movements)  # 2 to 4 pixels a frame, 4 frames


def test_some_objects_enter_and_some_leave():
    world = _world(frames=40, speed=(2.0, 4.0))
    entering = leaving = 0
    for index in range(40):
        frames = world.video(index)
        present = [set(f.masks) for f in frames]
        entering += len(present[-1] - present[0])
        leaving += len(present[0] - present[-1])
    assert entering > 0 and leaving > 0


def test_video_round_trip_keeps_size_count_and_content(tmp_path, video_file):
    path, frames = video_file
    info = video_info(path)
    assert (info.width, info.height, info.frames) == (frames[0].image.width, frames[0].image.height, len(frames))
    read = list(read_frames(path))
    assert [i for i, _ in read] == list(range(len(frames)))
    difference = np.abs(np.asarray(read[3][1], dtype=int) - np.asarray(frames[3].image, dtype=int)).mean()
    assert difference < 8  # lossy codec, same picture


def test_read_frames_streams(video_file):
    path, _ = video_file
    frames = read_frames(path)
    assert next(frames)[0] == 0 and next(frames)[0] == 1
    assert len(list(read_frames(path, max_frames=3))) == 3


def test_odd_sizes_are_padded_to_even(tmp_path):
    path = write_video(tmp_path / "odd.mp4", [Image.new("RGB", (33, 21), (90, 160, 30))] * 2)
    assert (video_info(path).width, video_info(path).height) == (34, 22)


def test_writer_leaves_nothing_when_it_fails(tmp_path):
    out = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError), VideoWriter(out, 5, 33, 21) as writer:
        writer.write(Image.new("RGB", (33, 21)))
        raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content, message", [
    (b"this is not a video", "cannot read"),
    (b"", "cannot read"),
])
def test_not_a_video_is_one_error(tmp_path, content, message):
    path = tmp_path / "clip.mp4"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        video_info(path)
    with pytest.raises(InputError, match=message):
        list(read_frames(path))


def test_missing_video_and_folder(tmp_path):
    with pytest.raises(InputError, match="not found"):
        video_info(tmp_path / "nope.mp4")
    with pytest.raises(InputError, match="folder"):
        video_info(tmp_path)


def test_video_without_frames_is_one_error(tmp_path):
    import av

    path = tmp_path / "empty.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width, stream.height = 32, 32
    with pytest.raises(InputError):
        list(read_frames(path))


# ---------------------------------------------------------------------- VideoCaptioner


def test_tracks_cover_every_frame_with_masks_boxes_and_keyframe_captions(region_model, video_file):
    path, truth = video_file
    boxes = [mask_box(truth[0].masks[i]) for i in sorted(truth[0].masks)]
    video = VideoCaptioner(region_model, VideoOptions(keyframe_every=3, change_threshold=0.0))
    seen = [(index, [t.object_id for t in tracks]) for index, _, tracks in video.run(read_frames(path), boxes=boxes)]
    assert [index for index, _ in seen] == list(range(len(truth)))
    assert seen[0][1] == list(range(len(boxes)))
    for track in video.tracks:
        record = track.to_dict()
        frames = sorted(int(i) for i in record["frames"])
        assert frames == list(range(frames[0], frames[-1] + 1)) and frames[0] == 0
        for value in record["frames"].values():
            mask = decode_rle(value["mask"])
            assert mask.shape == (truth[0].image.height, truth[0].image.width) and mask.any()
            assert value["box"] == mask_box(mask)
        starts = [k["frame"] for k in record["keyframes"]]
        assert starts[0] == 0 and all(b - a == 3 for a, b in zip(starts, starts[1:]))
        ranges = [k["frames"] for k in record["keyframes"]]
        assert ranges[-1][1] == frames[-1] and all(a[1] + 1 == b[0] for a, b in zip(ranges, ranges[1:]))
        assert record["caption"] in {k["caption"] for k in record["keyframes"]}
        json.dumps(record)


def test_a_changed_mask_is_a_keyframe(region_model, video_file):
    path, truth = video_file
    box = mask_box(truth[0].masks[min(truth[0].masks)])
    rarely = VideoCaptioner(region_model, VideoOptions(keyframe_every=100, change_threshold=0.0, **LENIENT))
    list(rarely.run(read_frames(path), boxes=[box]))
    always = VideoCaptioner(region_model, VideoOptions(keyframe_every=100, change_threshold=1.0, **LENIENT))
    list(always.run(read_frames(path), boxes=[box]))
    assert len(rarely.tracks[0].keyframes) == 1
    assert len(always.tracks[0].keyframes) > 1


def test_prompts_on_a_later_frame(region_model, video_file):
    path, truth = video_file
    box = mask_box(truth[4].masks[min(truth[4].masks)])
    video = VideoCaptioner(region_model)
    seen = [len(tracks) for _, _, tracks in video.run(read_frames(path), boxes=[box], frame=4)]
    assert seen[:4] == [0, 0, 0, 0] and seen[4] == 1
    assert min(video.tracks[0].frames) == 4


def test_run_streams_an_endless_video(region_model):
    def endless():
        for index in itertools.count():
            yield index, Image.new("RGB", (48, 32), (200, 200, 200) if index % 2 else (180, 190, 200))

    video = VideoCaptioner(region_model)
    taken = list(itertools.islice(video.run(endless(), boxes=[[4, 4, 20, 20]]), 5))
    assert [index for index, _, _ in taken] == [0, 1, 2, 3, 4]


def test_anything_mode_finds_objects_and_can_look_again(region_model, video_file):
    from sca.options import AnythingOptions

    path, _ = video_file
    loose = AnythingOptions(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, max_masks=3)
    video = VideoCaptioner(region_model, VideoOptions(anything_every=4), anything=loose)
    list(video.run(read_frames(path), anything=True))
    assert len(video.tracks) >= 1
    assert all(t.keyframes and t.keyframes[0]["frame"] == min(t.frames) for t in video.tracks)


@pytest.mark.parametrize("call, message", [
    (dict(), "either prompts"),
    (dict(boxes=[[1, 1, 9, 9]], anything=True), "either prompts"),
    (dict(boxes=[[1, 1, 9, 9]], frame=-1), "frame index"),
    (dict(boxes=[[1, 1, 9, 9]], frame=50), "past the video's end"),
    (dict(boxes=[[1, 1, 900, 9]]), "outside"),
])
def test_bad_runs_are_one_error(region_model, video_file, call, message):
    path, _ = video_file
    with pytest.raises(InputError, match=message):
        list(VideoCaptioner(region_model).run(read_frames(path), **call))


@pytest.mark.parametrize("options, message", [
    (dict(keyframe_every=0), "keyframe_every"), (dict(keyframe_every=2.5), "keyframe_every"),
    (dict(anything_every=0), "anything_every"), (dict(change_threshold=1.5), "change_threshold"),
    (dict(grow=float("nan")), "grow"),
])
def test_bad_options(options, message):
    with pytest.raises(InputError, match=message):
        VideoOptions(**options).check()


def test_track_caption_is_the_most_frequent_keyframe_caption_in_view():
    inside, at_edge = np.pad(np.ones((2, 2), bool), 1), np.pad(np.ones((2, 2), bool), ((0, 2), (1, 1)))
    track = Track(0)
    for index, caption in enumerate(["a red circle", "a blue circle", "a blue circle", "a red circle", "a blue circle"]):
        track.record(index, inside, 1.0)
        track.add_keyframe(index, caption)
    assert track.caption == "a blue circle"
    for index in range(5, 10):
        track.record(index, at_edge, 1.0)
        track.add_keyframe(index, "a small red circle")  # cut by the frame's edge: not counted
    assert track.caption == "a blue circle" and track.keyframes[-1]["in_view"] is False
    cut = Track(1)
    cut.record(0, at_edge, 1.0)
    cut.add_keyframe(0, "a small red circle")
    assert cut.caption == "a small red circle"  # with no keyframe in view, all count


def test_with_no_keyframe_in_view_the_track_caption_counts_each_by_the_area_it_shows():
    leaving = Track(0)
    for index, (rows, caption) in enumerate([(6, "a large red square"), (2, "a small red square"),
                                             (1, "a small red square")]):
        mask = np.zeros((8, 8), bool)
        mask[:rows, 2:6] = True  # cut by the top edge, less of it each frame
        leaving.record(index, mask, 1.0)
        leaving.add_keyframe(index, caption)
    assert [keyframe["area"] for keyframe in leaving.keyframes] == [24, 8, 4]
    assert leaving.caption == "a large red square"  # 24 pixels' worth against 12, though outvoted two to one


# ---------------------------------------------------------------------- SAM 2's memory tracker


def test_memory_tracker_follows_objects_with_bounded_memory(region_model, sam2_video_dir, video_file):
    path, truth = video_file
    tracker = MemoryTracker.from_pretrained(str(sam2_video_dir))
    masks = {i: truth[0].masks[i] for i in truth[0].masks}
    for index, picture in read_frames(path):
        seen = tracker.step(VideoFrame(index, picture, region_model), masks if index == 0 else {})
        if index == 0:
            assert set(seen) == set(masks)  # a mask prompt comes back as given, on its frame
        session = tracker.session
        assert len(session.processed_frames) == 1
        for outputs in session.output_dict_per_obj.values():
            assert len(outputs["non_cond_frame_outputs"]) <= tracker.window
    assert index == len(truth) - 1


def test_memory_tracker_takes_objects_that_start_later(region_model, sam2_video_dir, video_file):
    path, truth = video_file
    tracker = MemoryTracker.from_pretrained(str(sam2_video_dir))
    first, later = sorted(truth[0].masks)[0], sorted(truth[3].masks)[-1]
    for index, picture in read_frames(path, max_frames=5):
        new = {0: truth[0].masks[first]} if index == 0 else {1: truth[3].masks[later]} if index == 3 else {}
        seen = tracker.step(VideoFrame(index, picture, region_model), new)
        if index == 3:
            assert 1 in seen
    assert tracker.session.get_obj_num() == 2


def test_objects_that_start_together_start_however_their_masks_overlap(region_model, sam2_video_dir, video_file):
    _, truth = video_file
    tracker = MemoryTracker.from_pretrained(str(sam2_video_dir))
    first = truth[0].masks[min(truth[0].masks)]
    grown = first.copy()
    grown[: first.shape[0] // 2] = True  # holds all of the first: the segmenter would have seen them as one
    seen = tracker.step(VideoFrame(0, truth[0].image, region_model), {0: first, 1: grown})
    assert set(seen) == {0, 1}


def test_both_trackers_keep_objects_apart_by_the_share_they_are_given(region_model, sam2_video_dir, video_file,
                                                                       monkeypatch):
    from sca.video import trackers

    _, truth = video_file
    shares, exclusive = [], trackers.exclusive
    monkeypatch.setattr(trackers, "exclusive", lambda found, keep, share: shares.append(share) or exclusive(
        found, keep, share))
    options = VideoOptions(max_neighbour_share=0.4)
    for tracker in (trackers.ReprompterTracker(region_model, options),
                    MemoryTracker.from_pretrained(str(sam2_video_dir), options=options)):
        first = truth[0].masks[min(truth[0].masks)]
        tracker.step(VideoFrame(0, truth[0].image, region_model), {0: first})
        tracker.step(VideoFrame(1, truth[1].image, region_model), {})
    assert shares == [0.4] * 4


# ---------------------------------------------------------------------- captions from the tracker's own state


@pytest.fixture(scope="module")
def sca_on_the_trackers_sam2(sam2_video_dir, tmp_path_factory):
    """SCA on SAM 2 built from the video checkpoint, its SAM 2 then changed (as training all of it would), so that
    its object scores see every object: the tracker sees them only if it segments with these weights."""
    from sca.models.sca_region import build_sca_sam2

    torch.manual_seed(0)
    model = build_sca_sam2(sam2=str(sam2_video_dir), lm=str(save_tiny_lm(tmp_path_factory.mktemp("lm"))))
    with torch.no_grad():
        model.state_segmenter.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(20.0)
    return model


def test_the_memory_tracker_segments_with_the_sca_models_sam2_and_keeps_its_state(
        sca_on_the_trackers_sam2, sam2_video_dir, video_file):
    model = sca_on_the_trackers_sam2
    path, truth = video_file
    tracker = MemoryTracker.from_pretrained(str(sam2_video_dir), options=VideoOptions(**LENIENT), region_model=model)
    assert tracker.keeps_states
    tracker_weights = tracker.model.state_dict()
    for name, value in model.state_segmenter.state_dict().items():
        assert torch.equal(tracker_weights[name], value), name
    grid = model.state_segmenter.prompt_encoder.image_embedding_size
    width = model.state_segmenter.config.mask_decoder_config.hidden_size
    masks = {0: truth[0].masks[min(truth[0].masks)]}  # one: a random model's masks of two would be one blob
    states = []
    for index, picture in read_frames(path, max_frames=4):
        seen = tracker.step(VideoFrame(index, picture, model), masks if index == 0 else {})
        assert seen and set(tracker.states_now()) == set(seen)
        for state in tracker.states_now().values():
            assert state.output_tokens.shape[:2] == (1, 1) and state.output_tokens.shape[-1] == width
            assert state.image_features.shape == (1, 1, grid[0] * grid[1], width)
        states.append(tracker.states_now()[0])
    # what the memory conditions: the same object's features change from frame to frame
    assert not torch.allclose(states[1].image_features, states[2].image_features)


def test_the_trackers_states_carry_the_fine_features_the_model_reads(sam2_video_dir, video_file, tmp_path):
    """SCA on SAM 2 reading the fine levels (`mixer_high_resolution`): each state the tracker keeps carries the object's
    fine features of the frame, pooled inside the mask the tracker's decoder made; the model captions such states and
    refuses one without them."""
    from sca.models.sca_region import build_sca_sam2

    torch.manual_seed(0)
    model = build_sca_sam2(sam2=str(sam2_video_dir), lm=str(save_tiny_lm(tmp_path / "lm")), mixer_high_resolution=True)
    with torch.no_grad():
        model.state_segmenter.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(20.0)
        model.model.high_resolution_project.weight.normal_()
    path, truth = video_file
    tracker = MemoryTracker.from_pretrained(str(sam2_video_dir), options=VideoOptions(**LENIENT), region_model=model)
    assert tracker.keeps_states and tracker.region_features == model.state_region_features
    assert tracker.for_video(VideoOptions(**LENIENT)).region_features == model.state_region_features
    width = model.state_segmenter.config.mask_decoder_config.hidden_size
    masks = {0: truth[0].masks[min(truth[0].masks)]}
    kept = []
    for index, picture in read_frames(path, max_frames=3):
        tracker.step(VideoFrame(index, picture, model), masks if index == 0 else {})
        kept.extend(tracker.states_now().values())
    assert len(kept) == 3 and all(state.region_features.shape == (1, 1, width) for state in kept)
    assert not torch.allclose(kept[1].region_features, kept[2].region_features)
    assert len(model.describe_states(kept)) == 3
    with pytest.raises(ValueError, match="fine features"):
        model.describe_states([DecoderState(state.output_tokens, state.image_features) for state in kept])


def test_a_state_is_captioned_as_the_region_it_was_made_for(sca_on_the_trackers_sam2, video_file):
    from sca.models.prompts import Prompts

    model = sca_on_the_trackers_sam2
    _, truth = video_file
    encoded = model.encode([truth[0].image])
    boxes = [mask_box(truth[0].masks[i]) for i in sorted(truth[0].masks)]
    prompts, _ = Prompts.from_pixels(encoded.framed[0], model.frame, boxes=boxes)
    prompts = prompts.to(model.device, model.dtype)
    captions = model.caption(encoded, prompts).first_candidates()[0]
    segmentation = model.model.segment(encoded.embeddings, prompts)
    states = [DecoderState(segmentation.output_tokens[:, [r]], segmentation.image_features[:, [r]])
              for r in range(len(boxes))]
    assert model.describe_states(states) == captions
    assert model.describe_states(states[::-1]) == captions[::-1]


def test_sca_on_sam2_captions_its_tracks_from_the_trackers_state(sca_on_the_trackers_sam2, sam2_video_dir,
                                                                  video_file, monkeypatch):
    model = sca_on_the_trackers_sam2
    path, truth = video_file
    options = VideoOptions(keyframe_every=2, **LENIENT)
    tracker = MemoryTracker.from_pretrained(str(sam2_video_dir), options=options, region_model=model)
    described, captioned = [], []
    states_captions = model.describe_states

    def describe_states(states):
        captions = states_captions(states)
        captioned.extend(captions)
        return captions

    monkeypatch.setattr(model, "describe_states", describe_states)
    monkeypatch.setattr(model, "describe", lambda *args, **kwargs: described.append(args) or [])
    # the prompted object's first caption comes from the state as well: the region model only segments it
    monkeypatch.setattr(model, "caption", lambda *args, **kwargs: pytest.fail("the first frame was captioned twice"))
    video = VideoCaptioner(model, options, tracker=tracker)
    list(video.run(read_frames(path), boxes=[mask_box(truth[0].masks[min(truth[0].masks)])]))
    keyframes = [keyframe for track in video.tracks for keyframe in track.keyframes]
    assert len(keyframes) > len(video.tracks) and not described  # no keyframe re-prompts the region model
    assert sorted(k["caption"] for k in keyframes) == sorted(captioned)


def test_sca_video_with_a_trained_sca_on_sam2_and_its_tracker(sca_on_the_trackers_sam2, sam2_video_dir, video_file,
                                                               tmp_path, monkeypatch):
    from sca.models.sca_region import ScaRegionModel

    folder = tmp_path / "sca-sam2"
    sca_on_the_trackers_sam2.model.save_pretrained(folder)
    sca_on_the_trackers_sam2.tokenizer.save_pretrained(folder)
    monkeypatch.setattr(ScaRegionModel, "describe", lambda *args, **kwargs: pytest.fail("a keyframe was re-prompted"))
    from_states, describe_states = [], ScaRegionModel.describe_states
    monkeypatch.setattr(ScaRegionModel, "describe_states",
                        lambda self, states: from_states.extend(describe_states(self, states)) or from_states[-len(states):])
    path, truth = video_file
    box = ",".join(f"{v:g}" for v in mask_box(truth[0].masks[min(truth[0].masks)]))
    data = tmp_path / "tracks.json"
    assert main(["video", str(path), "--box", box, "--model", str(folder), "--tracker", str(sam2_video_dir),
                 "--keyframe-every", "2", "--json", str(data), "--quiet"]) == 0
    objects = json.loads(data.read_text())["objects"]
    assert len(objects) == 1 and [k["caption"] for k in objects[0]["keyframes"]] == from_states


def test_the_video_route_captions_from_the_trackers_state(sca_on_the_trackers_sam2, sam2_video_dir, video_file,
                                                          monkeypatch):
    from fastapi.testclient import TestClient

    from sca.app.server import create_app
    from sca.models.sca_region import ScaRegionModel

    model = sca_on_the_trackers_sam2
    monkeypatch.setattr(ScaRegionModel, "describe", lambda *args, **kwargs: pytest.fail("a keyframe was re-prompted"))
    from_states, describe_states = [], ScaRegionModel.describe_states
    monkeypatch.setattr(ScaRegionModel, "describe_states",
                        lambda self, states: from_states.extend(describe_states(self, states)) or from_states[-len(states):])
    path, truth = video_file
    with TestClient(create_app(model, "sca-sam2", tracker=str(sam2_video_dir))) as client:
        assert client.get("/api/model").json()["tracker"] == str(sam2_video_dir)
        video = client.post("/api/videos", content=path.read_bytes(), headers={"Content-Type": "video/mp4"}).json()
        body = {"video": video["video"], "regions": [{"box": mask_box(truth[0].masks[min(truth[0].masks)])}],
                "keyframe_every": 2}
        answers = [client.post("/api/video", json=body) for _ in range(2)]
    assert all(answer.status_code == 200 for answer in answers), answers[0].text
    first, second = (answer.json()["objects"] for answer in answers)
    assert len(first) == 1 and first[0]["keyframes"]
    assert [k["caption"] for k in first[0]["keyframes"] + second[0]["keyframes"]] == from_states
    # each video is followed afresh: the second request's tracks are the first's
    assert [track["frames"] for track in second] == [track["frames"] for track in first]


def test_a_tracker_follows_each_video_afresh_on_the_models_loaded_once(sca_on_the_trackers_sam2, sam2_video_dir,
                                                                       region_model, tmp_path, caplog):
    from sca.video.trackers import ReprompterTracker

    from builders import save_random_tiny_sca_sam2

    tracker = MemoryTracker.from_pretrained(str(sam2_video_dir), region_model=sca_on_the_trackers_sam2)
    options = VideoOptions(max_neighbour_share=0.3)
    fresh = tracker.for_video(options)
    assert fresh is not tracker and fresh.model is tracker.model and fresh.keeps_states
    assert fresh.rules.max_neighbour_share == 0.3 and fresh.session is None and not fresh.last
    reprompter = ReprompterTracker(region_model)
    assert reprompter.for_video(options).options is options and reprompter.for_video(options).model is region_model
    other = RegionCaptioner.from_pretrained(save_random_tiny_sca_sam2(tmp_path / "other")).model
    caplog.clear()
    unshared = MemoryTracker.from_pretrained(str(sam2_video_dir), region_model=other)
    assert caplog.text.count("not the region model's") == 1
    assert not unshared.for_video(options).keeps_states and caplog.text.count("not the region model's") == 1


def test_a_tracker_of_other_shapes_leaves_captions_to_the_masks(sam2_video_dir, tmp_path, caplog):
    from builders import save_random_tiny_sca_sam2

    model = RegionCaptioner.from_pretrained(save_random_tiny_sca_sam2(tmp_path / "sca-sam2")).model
    tracker = MemoryTracker.from_pretrained(str(sam2_video_dir), region_model=model)
    assert not tracker.keeps_states and "not the region model's" in caplog.text


def test_tracker_must_be_a_video_model(tmp_path, tiny_model_dir):
    with pytest.raises(InputError, match="not one with a video tracker"):
        MemoryTracker.from_pretrained(str(tiny_model_dir))
    with pytest.raises(InputError, match="no config.json"):
        MemoryTracker.from_pretrained(str(tmp_path))


def test_a_sam2_video_checkpoint_loads_as_a_segmenter(sam2_video_dir, caplog):
    from sca.models.segmenters import Segmenter

    segmenter = Segmenter.from_pretrained(str(sam2_video_dir))
    assert type(segmenter.model).__name__ == "Sam2Model"
    assert "model of type" not in caplog.text  # transformers' warning that the types differ says nothing here


# ---------------------------------------------------------------------- sca video


def test_sca_video_writes_json_and_the_annotated_video(tiny_model_dir, video_file, tmp_path, capsys):
    path, truth = video_file
    boxes = [mask_box(truth[0].masks[i]) for i in sorted(truth[0].masks)]
    out, data = tmp_path / "annotated.mp4", tmp_path / "tracks.json"
    prompts = [a for box in boxes for a in ("--box", ",".join(f"{v:g}" for v in box))]
    assert main(["video", str(path), *prompts, "--model", str(tiny_model_dir), "--out", str(out), "--json", str(data),
                 "--keyframe-every", "4", "--quiet"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(boxes)
    result = json.loads(data.read_text())
    assert len(result["objects"]) == len(boxes)
    assert (result["width"], result["height"]) == (truth[0].image.width, truth[0].image.height)
    assert video_info(out).frames == len(truth)
    annotated = np.asarray(next(read_frames(out))[1], dtype=int)
    original = np.asarray(truth[0].image, dtype=int)
    assert np.abs(annotated[: original.shape[0], : original.shape[1]] - original).mean() > 2  # something drawn


def test_sca_video_with_sam2_tracker_end_to_end(tiny_model_dir, sam2_video_dir, video_file, tmp_path, capsys):
    path, truth = video_file
    box = ",".join(f"{v:g}" for v in mask_box(truth[0].masks[min(truth[0].masks)]))
    data = tmp_path / "tracks.json"
    assert main(["video", str(path), "--box", box, "--model", str(tiny_model_dir), "--tracker", str(sam2_video_dir),
                 "--json", str(data), "--quiet"]) == 0
    objects = json.loads(data.read_text())["objects"]
    assert len(objects) == 1 and objects[0]["frames"]["0"]["mask"]["size"] == [truth[0].image.height,
                                                                              truth[0].image.width]


@pytest.mark.parametrize("extra, message", [
    (["--frame", "99", "--box", "1,1,9,9"], "past the video's end"),
    (["--box", "1,1,999,9"], "outside"),
    (["--point", "-3,4"], "outside"),
    ([], "--box/--point prompts"),
    (["--anything", "--box", "1,1,9,9"], "--box/--point prompts"),
    (["--box", "1,1,9,9", "--keyframe-every", "0"], "keyframe_every"),
    (["--box", "1,1,9,9", "--out", "x.gif"], "must end in"),
    (["--box", "1,1,9,9", "--json", "x.txt"], "must end in .json"),
    (["--box", "1,1,9,9", "--tracker", "nowhere/at-all-local"], ""),
    (["--box", "1,1,9,9", "--max-megapixels", "0.001"], "(--max-megapixels)"),
])
def test_sca_video_bad_input_is_one_line_and_writes_nothing(tiny_model_dir, video_file, tmp_path, capsys,
                                                             monkeypatch, extra, message):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    path, _ = video_file
    out = tmp_path / "out.mp4"
    extra = [a if a != "x.gif" and a != "x.txt" else str(tmp_path / a) for a in extra]
    try:
        code = main(["video", str(path), "--model", str(tiny_model_dir), "--quiet", *extra,
                     *([] if "--out" in extra else ["--out", str(out)])])
    except SystemExit as exit:  # argparse's own usage errors
        code = exit.code
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1 and message in error[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".webm", ".mov", ".avi"])
def test_every_documented_suffix_is_written_and_read_back(tmp_path, suffix):
    from sca.video.io import VIDEO_SUFFIXES

    assert suffix in VIDEO_SUFFIXES
    frames = [frame.image for frame in _world(frames=3).video(0)]
    path = write_video(tmp_path / f"clip{suffix}", frames, fps=4)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no hidden file left beside it
    info = video_info(path, count_frames=True)
    assert (info.width, info.height, info.frames) == (frames[0].width, frames[0].height, 3)


def test_a_still_image_is_not_a_video(tiny_model_dir, tmp_path, capsys):
    from sca.assets import SAMPLE_IMAGE

    assert main(["video", str(SAMPLE_IMAGE), "--box", "1,1,9,9", "--model", str(tiny_model_dir)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "still image (png), not a video" in error[0]
    with pytest.raises(InputError, match="still image"):
        video_info(SAMPLE_IMAGE.read_bytes())


def test_sca_video_on_a_file_that_is_not_a_video(tiny_model_dir, tmp_path, capsys):
    path = tmp_path / "clip.mp4"
    path.write_text("not a video")
    assert main(["video", str(path), "--box", "1,1,9,9", "--model", str(tiny_model_dir)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "cannot read" in error[0]


def test_sca_bench_video_writes_its_table(tiny_model_dir, tmp_path, capsys):
    assert main(["bench", "video", "--model", str(tiny_model_dir), "--videos", "2", "--frames", "4", "--image-size", "64",
                 "--memory-frames", "8", "--out", str(tmp_path)]) == 0
    table = (tmp_path / "video.md").read_text()
    assert "track mIoU" in table and "peak memory, 4 → 8 frames" in table and "ceiling: mIoU" in table
    report = json.loads((tmp_path / "video.json").read_text())
    assert 0 <= report["track_mIoU"] <= 1 and report["frames"] == 8
    assert 0 <= report["ceiling"]["mIoU"] <= 1 and report["ceiling"]["frames"] == 8


@pytest.mark.parametrize("extra, message", [(["--speed", "3,1"], "--speed"), (["--videos", "0"], "--videos")])
def test_sca_bench_video_bad_options(tiny_model_dir, capsys, extra, message):
    assert main(["bench", "video", "--model", str(tiny_model_dir), *extra]) == 2
    assert message in capsys.readouterr().err


def test_a_chat_vlm_gives_the_track_one_caption_from_several_views(video_file):
    from sca.models.captioners import ChatCaptioner
    from sca.models.sam_captioner import SamCaptioner

    from builders import build_tiny_llava, tiny_sam

    path, truth = video_file
    torch.manual_seed(0)
    vlm, processor = build_tiny_llava()
    model = SamCaptioner(tiny_sam(), ChatCaptioner(vlm, processor, max_new_tokens=3))
    asked = []
    original = model.captioner.describe_views
    model.captioner.describe_views = lambda views: asked.append(len(views)) or original(views)
    video = VideoCaptioner(model, VideoOptions(keyframe_every=1, track_views=3, **LENIENT))
    box = mask_box(truth[0].masks[min(truth[0].masks)])
    list(video.run(read_frames(path, max_frames=7), boxes=[box]))
    (track,) = video.tracks
    assert asked == [3] and track.to_dict()["caption_from"] == "views"
    assert isinstance(track.caption, str) and not track.views  # the views are let go once summarised


def test_views_stay_bounded_and_spread():
    track = Track(0)
    for index in range(50):
        track.record(index, np.pad(np.ones((4, 4), bool), 4), 1.0)
        track.add_keyframe(index, "x", Image.new("RGB", (12, 12)), max_views=4)
    assert len(track.views) < 8
    assert len(track.chosen_views(4)) == 4


def test_from_pretrained_takes_the_region_captioner_arguments(tiny_model_dir):
    video = VideoCaptioner.from_pretrained(tiny_model_dir, options=VideoOptions(keyframe_every=2), max_new_tokens=3)
    assert video.options.keyframe_every == 2 and video.model.settings()["model"]
