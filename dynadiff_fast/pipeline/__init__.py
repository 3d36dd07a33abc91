"""dynadiff_fast.pipeline"""
