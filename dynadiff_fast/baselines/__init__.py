"""dynadiff_fast.baselines"""
