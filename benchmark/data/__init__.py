"""Datasets in MMSegmentation's on-disk layouts, their pipelines, preparation and synthetic stand-ins."""
