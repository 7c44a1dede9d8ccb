"""Bundled real market data (bokeh_sampledata's daily stocks, 2000-2013)."""

from technic_stream.data.sample import SAMPLE_SYMBOLS, SeriesOHLCV, load_sample

__all__ = ["SAMPLE_SYMBOLS", "SeriesOHLCV", "load_sample"]
