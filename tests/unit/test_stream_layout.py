"""Partitions split over several JetStream streams by contiguous range (issue 17).

Pure: the mapping of ``StreamSettings`` and the stream configurations built from it.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterline.core.partitions import PARTITIONS_MAX
from meterline.stream.naming import stream_settings
from meterline.stream.settings import STREAMS_MAX, StreamSettings
from meterline.stream.setup import consumer_config, stream_config

URL = "nats://127.0.0.1:4222"


@st.composite
def layouts(draw: st.DrawFn) -> StreamSettings:
    partitions = draw(st.integers(1, PARTITIONS_MAX))
    streams = draw(st.integers(1, min(STREAMS_MAX, partitions)))
    return StreamSettings.from_url(URL, partitions=partitions, streams=streams)


@given(layouts())
def test_every_partition_lives_in_exactly_one_stream_of_a_contiguous_range(
    settings: StreamSettings,
) -> None:
    ranges = [settings.stream_partitions(index) for index in range(settings.streams)]
    # the ranges follow each other without gap or overlap and cover every partition
    assert [p for partition_range in ranges for p in partition_range] == list(
        range(settings.partitions)
    )
    assert all(len(partition_range) >= 1 for partition_range in ranges)
    sizes = {len(partition_range) for partition_range in ranges}
    assert max(sizes) - min(sizes) <= 1
    for index, partition_range in enumerate(ranges):
        for partition in partition_range:
            assert settings.stream_index(partition) == index
            assert partition * settings.streams // settings.partitions == index
            assert settings.stream_of(partition) == settings.stream_names()[index]


@given(layouts())
def test_stream_subjects_never_overlap_and_cover_every_partition_subject(
    settings: StreamSettings,
) -> None:
    subjects = [settings.stream_subjects(index) for index in range(settings.streams)]
    if settings.streams == 1:
        assert subjects == [[f"{settings.subject_prefix}.*"]]
        return
    flat = [subject for stream_subjects in subjects for subject in stream_subjects]
    assert len(flat) == len(set(flat)) == settings.partitions
    assert set(flat) == {settings.subject(p) for p in range(settings.partitions)}
    for partition in range(settings.partitions):
        assert settings.subject(partition) in subjects[settings.stream_index(partition)]
    assert len(set(settings.stream_names())) == settings.streams


def test_one_stream_keeps_the_single_stream_names_and_configuration() -> None:
    settings = stream_settings(URL, 8)
    assert settings.streams == 1
    assert settings.stream_names() == ("METERLINE_EVENTS",)
    assert {settings.stream_of(p) for p in range(8)} == {"METERLINE_EVENTS"}
    config = stream_config(settings)
    assert config.name == "METERLINE_EVENTS"
    assert config.subjects == ["meterline.events.*"]
    assert config.description == "meterline event batches, one subject per partition"


def test_several_streams_are_named_by_number_and_list_their_partitions() -> None:
    settings = stream_settings(URL, 8, namespace="shop", streams=3)
    assert settings.stream_names() == ("SHOP_EVENTS-0", "SHOP_EVENTS-1", "SHOP_EVENTS-2")
    assert [list(settings.stream_partitions(k)) for k in range(3)] == [
        [0, 1, 2],
        [3, 4, 5],
        [6, 7],
    ]
    config = stream_config(settings, 1)
    assert config.name == "SHOP_EVENTS-1"
    assert config.subjects == ["shop.events.3", "shop.events.4", "shop.events.5"]
    assert "partitions 3-5 of 8" in (config.description or "")
    # a partition's consumer filters on its own subject, in its own stream
    assert consumer_config(settings, 4).filter_subject == "shop.events.4"
    assert settings.stream_of(4) == "SHOP_EVENTS-1"


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"streams": 0}, f"streams must be an integer from 1 to {STREAMS_MAX}, got 0"),
        ({"streams": STREAMS_MAX + 1, "partitions": 1024}, "streams must be an integer"),
        ({"streams": 2.0}, "streams must be an integer"),
        ({"streams": True}, "streams must be an integer"),
        ({"streams": 5, "partitions": 4}, r"streams \(5\) must be at most the partition count"),
    ],
)
def test_invalid_stream_counts_are_refused_naming_the_field(
    options: dict[str, Any], reason: str
) -> None:
    with pytest.raises(ValueError, match=f"^{reason}"):
        StreamSettings.from_url(URL, **options)


def test_the_command_line_names_the_streams_option() -> None:
    with pytest.raises(ValueError, match=r"^--streams \(3\) must be at most the partition count"):
        stream_settings(URL, 2, streams=3)
    with pytest.raises(ValueError, match=r"^--streams must be an integer"):
        stream_settings(URL, 2, streams=0)


def test_stream_indexes_outside_the_layout_are_refused() -> None:
    settings = StreamSettings.from_url(URL, partitions=4, streams=2)
    for index in (-1, 2):
        with pytest.raises(ValueError, match="stream index must be from 0 to 1"):
            settings.stream_name(index)
        with pytest.raises(ValueError, match="stream index must be from 0 to 1"):
            settings.stream_subjects(index)
    with pytest.raises(ValueError, match="partition must be from 0 to 3"):
        settings.stream_of(4)
