"""smartpark.fast"""
