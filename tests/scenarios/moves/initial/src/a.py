print('module a, long enough to be unique')
